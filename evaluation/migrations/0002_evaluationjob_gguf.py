from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('evaluation', '0001_evaluation_jobs'),
    ]

    operations = [
        migrations.AddField(
            model_name='evaluationjob',
            name='model_gguf',
            field=models.CharField(blank=True, help_text='Local backend: a GGUF file inside `model`', max_length=500),
        ),
        migrations.AddField(
            model_name='evaluationjob',
            name='base_gguf',
            field=models.CharField(blank=True, help_text='Local backend: a GGUF file inside `base_model`', max_length=500),
        ),
    ]
