from django.contrib import admin

from digests.models import DigestDelivery, DigestSubscription

admin.site.register(DigestSubscription)
admin.site.register(DigestDelivery)
