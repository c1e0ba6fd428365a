"""Create a development superuser once, printing its generated password (make run)."""

import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from rest_framework.authtoken.models import Token


class Command(BaseCommand):
    help = "If no superuser exists, create `admin` with a random password and an API token, and print both once."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin")

    def handle(self, *args, username, **options):
        if not settings.DEBUG:
            raise CommandError("Refusing to create a development superuser with DEBUG off; use createsuperuser.")
        User = get_user_model()
        if User.objects.filter(is_superuser=True).exists():
            self.stdout.write("A superuser already exists; not creating one (password was printed when it was made).")
            return
        password = secrets.token_urlsafe(12)
        user = User.objects.create_superuser(username=username, email="", password=password)
        token = Token.objects.create(user=user)
        self.stdout.write(self.style.SUCCESS("Created the development superuser (shown only this once):"))
        self.stdout.write(f"  username: {username}\n  password: {password}\n  API token: {token.key}")
