"""Forms of the generation pages. They parse what a browser posts; the services decide what is allowed."""

from typing import Any

from django import forms

from curation.models import Leaf, TaxonomySnapshot
from generation.models import GenerationRun, Sample, Teacher
from generation.sdg.pipelines import PipelineConfig
from generation.selectors import under_path
from generation.services.teachers import TEACHER_FIELDS

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
            kwargs.setdefault("initial", {name: getattr(teacher, name) for name in TEACHER_FIELDS})
        super().__init__(*args, **kwargs)
        self.teacher = teacher
        self.fields = {**forms.fields_for_model(Teacher, fields=TEACHER_FIELDS, labels=TEACHER_LABELS), **self.fields}
        self.fields["api_key"].help_text = (
            "Leave blank to keep the stored key." if teacher and teacher.has_api_key else "Optional."
        )
        if teacher is None or not teacher.has_api_key:
            del self.fields["clear_api_key"]

    def teacher_fields(self) -> dict[str, Any]:
        return {name: self.cleaned_data[name] for name in TEACHER_FIELDS}

    def api_key_change(self) -> str | None:
        """For `teacher_update`: None keeps the stored key, "" removes it, anything else replaces it."""
        if self.cleaned_data.get("clear_api_key"):
            return ""
        return self.cleaned_data.get("api_key") or None


LOCAL_SAMPLES_PER_LEAF = 2


class RunForm(forms.Form):
    name = forms.CharField(max_length=200, required=False, help_text="Optional; shown in lists")
    teacher = forms.ModelChoiceField(queryset=Teacher.objects.order_by("name"), empty_label=None)
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
        initial=30,
        help_text="Each leaf's share, spread over its seeds or chunks. A local teacher on the CPU takes tens of "
        "seconds a sample",
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
        super().__init__(*args, **kwargs)
        self.fields["leaves"].label_from_instance = lambda leaf: f"{leaf.path}{'' if leaf.is_valid else ' (invalid)'}"
        preselected = self.fields["teacher"].queryset.first()
        if not self.is_bound and preselected is not None and preselected.backend == Teacher.Backend.LOCAL:
            # A first run on the embedded CPU teacher should end in minutes, not hours.
            self.fields["samples_per_leaf"].initial = LOCAL_SAMPLES_PER_LEAF

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
    state = forms.ChoiceField(choices=[("", "Any state"), *Sample.State.choices], required=False)
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
