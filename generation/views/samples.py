"""Generated samples: a filtered, paginated list and each sample with its whole lineage."""

from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.utils.functional import cached_property
from django.views.decorators.http import require_GET

from generation.extensions import sample_states
from generation.forms import SampleFilterForm
from generation.models import Sample
from generation.selectors import sample_list as samples_filtered
from labweb.roles import any_role_required
from labweb.web import is_partial

LIST = "generation/sample_list.html"
PAGE_SIZE = 50
COUNT_UP_TO = 10_000


class CappedPaginator(Paginator):
    """Counts the samples up to `COUNT_UP_TO` and says "more" past it: counting a run's million samples on every
    page takes longer than the page itself. Pages go as far as the count; filters narrow the rest."""

    @cached_property
    def count(self) -> int:
        return self.object_list[: COUNT_UP_TO + 1].count()

    @property
    def capped(self) -> bool:
        return self.count > COUNT_UP_TO


@require_GET
@any_role_required
def sample_list(request: HttpRequest) -> HttpResponse:
    form = SampleFilterForm(request.GET or None)
    filters = form.filters()
    page = CappedPaginator(samples_filtered(**filters), PAGE_SIZE).get_page(request.GET.get("page"))
    states = sample_states(sample.pk for sample in page.object_list)
    for sample in page.object_list:
        sample.review_state = states.get(sample.pk)
    context = {"form": form, "page": page, "filtered": any(filters.values()), "count_up_to": COUNT_UP_TO}
    return render(request, f"{LIST}#results" if is_partial(request) else LIST, context)


@require_GET
@any_role_required
def sample_detail(request: HttpRequest, pk: int) -> HttpResponse:
    sample = get_object_or_404(Sample.objects.select_related("run", "item", "teacher", "leaf"), pk=pk)
    sample.review_state = sample_states([sample.pk]).get(sample.pk)
    return render(request, "generation/sample_detail.html", {"sample": sample})
