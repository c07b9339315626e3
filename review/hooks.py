"""Review's hooks into the apps below it, connected in `ReviewConfig.ready()` (they never import review)."""

from django.template.loader import render_to_string

from review import selectors


def on_samples_written(sender, item, **kwargs) -> None:
    from review.services.sync import items_open

    items_open(samples=item.samples.all())


def on_duplicates_marked(sender, run_id, **kwargs) -> None:
    from review.models import ReviewItem

    ReviewItem.objects.filter(run_id=run_id, is_duplicate=False, sample__duplicate_of__isnull=False).update(
        is_duplicate=True
    )


def run_panel(request, run) -> str:
    """Review progress of a run on generation's run page."""
    summary = selectors.progress(run=run.pk)
    if not summary["total"].total:
        return ""
    return render_to_string("review/partials/run_panel.html", {"run": run, "summary": summary}, request)


def sample_states(ids: list[int]) -> dict:
    """Each sample's review state and its review screen, for generation's sample list and page."""
    from django.urls import reverse

    from generation.extensions import SampleState
    from review.models import ReviewItem

    rows = ReviewItem.objects.filter(sample_id__in=ids).values_list("sample_id", "state")
    return {pk: SampleState(state, reverse("review:screen", args=[pk])) for pk, state in rows}


def register() -> None:
    from generation.extensions import register_run_panel, register_sample_states

    register_run_panel(run_panel)
    register_sample_states(sample_states)
