"""Create the database cache table, so `migrate` alone prepares a fresh database.

django-q2 publishes cluster liveness through the cache; the web process reads it
for /api/v1/health, so the cache must be shared (database, or Redis if configured).
"""

from django.core.management import call_command
from django.db import migrations


def create_cache_table(apps, schema_editor):
    call_command("createcachetable", database=schema_editor.connection.alias, verbosity=0)


class Migration(migrations.Migration):
    dependencies = [("runs", "0001_initial")]

    operations = [migrations.RunPython(create_cache_table, migrations.RunPython.noop)]
