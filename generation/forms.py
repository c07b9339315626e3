"""Forms of the generation pages. They parse what a browser posts; the services decide what is allowed."""

from typing import Any

from django import forms

from curation.models import Leaf, TaxonomySnapshot
from generation.models import GenerationRun, Teacher
from generation.sdg.pipelines import PipelineConfig
from generation.selectors import run_samples_per_leaf_default, under_path
from generation.services.teachers import TEACHER_FIELDS, replicas_parse, replicas_text
from labweb.errors import LabError

PIPELINE_DEFAULTS = PipelineConfig()
TEACHER_LABELS = {
    "base_url": "Server URL",
    "gguf_file": "GGUF file",
    "top_p": "Top-p",
    "max_tokens": "Max tokens per answer",
    "max_concurrency": "Max concurrent requests",
    "timeout_seconds": "Timeout (seconds)",
    "context_tokens": "Context length (tokens)",
}
TEACHER_HELP = {
    "base_url": "e.g. http://gpu-box:8000/v1 (vLLM)",
    "model": "The model name the server knows; for the local backend a path or hub name",
    "gguf_file": "Local backend only: a GGUF file inside the model's folder",
    "max_concurrency": "Requests in flight at once on this server, across every worker process",
    "context_tokens": "The model's context length; knowledge chunks are sized to fit",
}
KNOBS = ("questions_per_call", "max_rounds", "pair_threshold", "dedup_threshold")


class TeacherForm(forms.Form):
    """A teacher's settings. The API key is write-only: never rendered back, blank keeps the stored one."""

    api_key = forms.CharField(
        required=False,
        strip=True,
        max_length=500,
        label="API key",
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
    )
    clear_api_key = forms.BooleanField(required=False, label="Clear the stored API key")

    def __init__(self, *args: Any, teacher: Teacher | None = None, **kwargs: Any) -> None:
        if teacher is not None:
            initial = {name: getattr(teacher, name) for name in TEACHER_FIELDS}
            kwargs.setdefault("initial", {**initial, "replicas": replicas_text(teacher.replicas)})
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)
        self.teacher = teacher
        model_fields = forms.fields_for_model(
            Teacher, fields=TEACHER_FIELDS, labels=TEACHER_LABELS, help_texts=TEACHER_HELP
        )
        self.fields = {**model_fields, **self.fields}
        self.fields["api_key"].help_text = (
            "Leave blank to keep the stored key." if teacher and teacher.has_api_key else "Optional."
        )
        if teacher is None or not teacher.has_api_key:
            del self.fields["clear_api_key"]
        self.fields["answer_format"].required = False  # left out: find out (the probe)
        self.fields["replicas"] = forms.CharField(
            required=False,
            label="Replicas",
            widget=forms.Textarea(attrs={"rows": 3, "placeholder": "http://gpu-box-2:8000/v1 16"}),
            help_text="More servers of the same model, one a line: its URL, then its max concurrency (8 if left "
            "out). Calls go to the least loaded; one that fails is left out for a while.",
        )

    def clean_replicas(self) -> list[dict]:
        try:
            return replicas_parse(self.cleaned_data.get("replicas") or "")
        except LabError as error:
            raise forms.ValidationError(error.message) from None

    def teacher_fields(self) -> dict[str, Any]:
        fields = {name: self.cleaned_data[name] for name in TEACHER_FIELDS}
        fields["answer_format"] = fields["answer_format"] or Teacher.AnswerFormat.AUTO
        return fields

    def api_key_change(self) -> str | None:
        """For `teacher_update`: None keeps the stored key, "" removes it, anything else replaces it."""
        if self.cleaned_data.get("clear_api_key"):
            return ""
        return self.cleaned_data.get("api_key") or None


class TeacherSelect(forms.Select):
    """Each option carries the samples per leaf its teacher offers; app.js puts it in the form until the user
    types a number of their own."""

    def create_option(self, name, value, *args, **kwargs):
        option = super().create_option(name, value, *args, **kwargs)
        teacher = getattr(value, "instance", None)
        if teacher is not None:
            option["attrs"]["data-default"] = run_samples_per_leaf_default(teacher)
        return option


class RunForm(forms.Form):
    name = forms.CharField(max_length=200, required=False, help_text="Optional; shown in lists")
    teacher = forms.ModelChoiceField(
        queryset=Teacher.objects.order_by("name"),
        empty_label=None,
        widget=TeacherSelect(attrs={"data-default-target": "id_samples_per_leaf"}),
    )
    scope = forms.ChoiceField(
        choices=GenerationRun.Scope.choices, initial=GenerationRun.Scope.ALL, widget=forms.RadioSelect
    )
    baseline = forms.ModelChoiceField(
        queryset=TaxonomySnapshot.objects.order_by("-created_at"),
        required=False,
        empty_label="The last import",
        help_text="For “changed since a baseline”",
    )
    leaves = forms.ModelMultipleChoiceField(
        queryset=Leaf.objects.only("id", "path", "kind", "is_valid").order_by("path"),
        required=False,
        widget=forms.SelectMultiple(attrs={"size": 10}),
        help_text="For “chosen leaves”",
    )
    leaf_paths = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        label="Or leaf paths",
        help_text="One path or folder per line; every leaf under a folder is chosen",
    )
    samples_per_leaf = forms.IntegerField(
        min_value=1,
        max_value=100_000,
        help_text="Each leaf's share, spread over its seeds or chunks. The default follows the teacher: "
        "a local teacher on the CPU takes tens of seconds a call",
    )
    questions_per_call = forms.IntegerField(min_value=1, initial=PIPELINE_DEFAULTS.questions_per_call)
    max_rounds = forms.IntegerField(min_value=1, initial=PIPELINE_DEFAULTS.max_rounds)
    pair_threshold = forms.IntegerField(
        min_value=1,
        max_value=3,
        initial=PIPELINE_DEFAULTS.pair_threshold,
        help_text="Lowest pair-judge score kept (1–3)",
    )
    dedup_threshold = forms.FloatField(
        min_value=0,
        max_value=1,
        initial=PIPELINE_DEFAULTS.dedup_threshold,
        help_text="Questions this similar to one already seen are dropped (0–1)",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)
        self.fields["leaves"].label_from_instance = lambda leaf: f"{leaf.path}{'' if leaf.is_valid else ' (invalid)'}"
        self.fields["samples_per_leaf"].initial = run_samples_per_leaf_default(self.fields["teacher"].queryset.first())

    def estimate_arguments(self) -> dict[str, Any] | None:
        """What `run_estimate` needs from the form as it stands, typed or not; None before a teacher is chosen."""
        self.is_valid()
        data = self.cleaned_data
        teacher = data.get("teacher")
        if teacher is None or any(name in self.errors for name in ("samples_per_leaf", *KNOBS)):
            return None
        return {
            "teacher": teacher,
            "scope": data.get("scope") or GenerationRun.Scope.ALL,
            "baseline": data.get("baseline"),
            "leaf_ids": self.leaf_ids(),
            "samples_per_leaf": data.get("samples_per_leaf") or run_samples_per_leaf_default(teacher),
            "config": self.config(),
        }

    def leaf_ids(self) -> list[int] | None:
        ids = [leaf.pk for leaf in self.cleaned_data.get("leaves") or []]
        for line in (self.cleaned_data.get("leaf_paths") or "").splitlines():
            if line.strip():
                ids += under_path(Leaf.objects.all(), line, "path").values_list("pk", flat=True)
        return sorted(set(ids)) or None

    def config(self) -> dict[str, Any]:
        return {name: self.cleaned_data[name] for name in KNOBS if self.cleaned_data.get(name) is not None}


class SampleFilterForm(forms.Form):
    run = forms.ModelChoiceField(
        queryset=GenerationRun.objects.only("id", "name").order_by("-created_at", "-id"),
        required=False,
        empty_label="Every run",
    )
    leaf_path = forms.CharField(
        required=False,
        label="Leaf path or folder",
        widget=forms.TextInput(attrs={"placeholder": "Leaf path or folder", "type": "search"}),
    )
    kind = forms.ChoiceField(
        choices=[("", "Any kind"), ("skills", "skills"), ("knowledge", "knowledge")], required=False
    )
    q = forms.CharField(
        required=False,
        label="Question contains",
        widget=forms.TextInput(attrs={"placeholder": "Question contains", "type": "search"}),
    )

    def filters(self) -> dict[str, Any]:
        if not self.is_valid():
            return {}
        data = dict(self.cleaned_data)
        data["run"] = data["run"].pk if data.get("run") else None
        return data
