# The team is set on every row by 0002_teams; required from here on. A migration of its own: on PostgreSQL, NOT NULL
# cannot be set in the transaction that just updated the rows' foreign keys (their checks are still pending).

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("flows", "0002_teams"),
    ]

    operations = [
        migrations.AlterField(
            model_name="flow",
            name="team",
            field=models.ForeignKey(
                db_index=False,
                help_text="The team the flow belongs to: only its members see it and run it.",
                on_delete=django.db.models.deletion.PROTECT,
                related_name="flows",
                to="agentrunner.team",
            ),
        ),
    ]
