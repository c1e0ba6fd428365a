from django.contrib import admin

from schedules.models import Schedule, ScheduleFire

admin.site.register(Schedule)
admin.site.register(ScheduleFire)
