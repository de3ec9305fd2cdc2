from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('recommender', '0008_queue_bookkeeping_and_one_reembedding'),
    ]

    operations = [
        migrations.AddField(
            model_name='trainingjob',
            name='attempts',
            field=models.PositiveSmallIntegerField(default=0),
        ),
        migrations.AddField(
            model_name='trainingjob',
            name='heartbeat',
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
