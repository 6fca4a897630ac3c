"""Move the message bytes out of the outbox row (see OutboxBody); drop the index that
outbox_claim and outbox_rate already cover."""

from django.db import migrations, models
import django.db.models.deletion


def copy_bodies(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        # A process still running the previous version must not queue a row (bytes in the
        # old column) after the copy and before the column is dropped; SHARE mode makes its
        # INSERT wait for this migration's transaction, which it then fails visibly.
        schema_editor.execute("LOCK TABLE store_outboxitem IN SHARE MODE")
    item_model = apps.get_model("store", "OutboxItem")
    body_model = apps.get_model("store", "OutboxBody")
    last = 0
    while True:
        chunk = list(
            item_model.objects.filter(pk__gt=last).order_by("pk").values_list("pk", "raw")[:500]
        )
        if not chunk:
            return
        body_model.objects.bulk_create([body_model(item_id=pk, raw=raw) for pk, raw in chunk])
        last = chunk[-1][0]


def copy_back(apps, schema_editor):
    item_model = apps.get_model("store", "OutboxItem")
    body_model = apps.get_model("store", "OutboxBody")
    for item_id, raw in body_model.objects.values_list("item_id", "raw").iterator():
        item_model.objects.filter(pk=item_id).update(raw=raw)


class Migration(migrations.Migration):

    dependencies = [
        ("store", "0007_outbox_claim_index"),
    ]

    operations = [
        migrations.CreateModel(
            name="OutboxBody",
            fields=[
                (
                    "item",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="body",
                        serialize=False,
                        to="store.outboxitem",
                    ),
                ),
                ("raw", models.BinaryField()),
            ],
        ),
        migrations.RunPython(copy_bodies, copy_back),
        migrations.AlterField(
            model_name="outboxitem",
            name="raw",
            field=models.BinaryField(default=b""),
        ),
        migrations.RemoveField(
            model_name="outboxitem",
            name="raw",
        ),
        migrations.AlterField(
            model_name="outboxitem",
            name="server",
            field=models.ForeignKey(
                blank=True,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                to="store.outgoingserver",
            ),
        ),
    ]
