"""The evaluation page's form; the service decides what is allowed."""

from django import forms

from evaluation.core.compare import Thresholds
from evaluation.models import EvaluationJob
from generation.models import Teacher
from training.models import Checkpoint

DEFAULT = Thresholds()


class EvaluationForm(forms.Form):
    checkpoint = forms.ModelChoiceField(
        queryset=Checkpoint.objects.select_related("phase__job").order_by("-created_at"),
        required=False,
        help_text="Its training job's base model is evaluated beside it.",
    )
    model = forms.CharField(
        max_length=1000, required=False, help_text="Without a checkpoint: a model folder, or the server's model name."
    )
    base_model = forms.CharField(
        max_length=1000,
        required=False,
        help_text="Blank: the checkpoint's base. Another checkpoint's folder compares two.",
    )
    backend = forms.ChoiceField(choices=EvaluationJob.Backend.choices, initial=EvaluationJob.Backend.LOCAL)
    server_url = forms.CharField(
        max_length=500, required=False, label="Server URL", help_text="e.g. http://gpu:8000/v1"
    )
    server_api_key = forms.CharField(
        max_length=500,
        required=False,
        label="Server API key",
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Server backend: the key it asks for (vLLM's --api-key), if any. Never shown back.",
    )
    judge = forms.ModelChoiceField(
        queryset=Teacher.objects.all(), required=False, help_text="Blank: the teacher that generated the data."
    )
    leaves = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        required=False,
        help_text="Leaf paths, one a line. Blank: the leaves the checkpoint was trained on.",
    )
    judge_threshold = forms.FloatField(min_value=0, max_value=10, initial=DEFAULT.judge, label="Rating threshold")
    choice_threshold = forms.FloatField(min_value=0, max_value=1, initial=DEFAULT.choice, label="Accuracy threshold")
    loss_threshold = forms.FloatField(min_value=0, max_value=10, initial=DEFAULT.loss, label="Loss threshold")
    max_new_tokens = forms.IntegerField(min_value=1, max_value=4096, initial=128, label="Answer length (tokens)")

    def service_arguments(self) -> dict:
        data = self.cleaned_data
        base = data["base_model"].strip()
        return {
            "checkpoint": data["checkpoint"],
            "model": data["model"],
            "base_model": base or None,
            "backend": data["backend"],
            "server_url": data["server_url"].strip(),
            "server_api_key": data["server_api_key"],
            "judge": data["judge"],
            "leaves": [line.strip().strip("/") for line in data["leaves"].splitlines() if line.strip()],
            "thresholds": {
                "judge": data["judge_threshold"],
                "choice": data["choice_threshold"],
                "loss": data["loss_threshold"],
            },
            "max_new_tokens": data["max_new_tokens"],
        }
