"""Places on generation's pages that the apps above it fill in (generation imports none of them).

An app registers a panel in its `AppConfig.ready()`: `register_run_panel(fn)`, where `fn(request, run)`
returns the HTML of a section for the run page (or "" for none). Review owns the decisions on samples: it
registers `register_sample_states(fn)`, where `fn(ids)` maps sample ids to a `SampleState` (its state and the
page where it is decided), shown on the sample list and page.
"""

from collections.abc import Callable, Iterable
from typing import NamedTuple

from django.http import HttpRequest
from django.utils.safestring import SafeString, mark_safe

RunPanel = Callable[[HttpRequest, object], str]
_run_panels: list[RunPanel] = []


def register_run_panel(panel: RunPanel) -> None:
    if panel not in _run_panels:
        _run_panels.append(panel)


def run_panels(request: HttpRequest, run) -> list[SafeString]:
    return [mark_safe(html) for html in (panel(request, run) for panel in _run_panels) if html]  # noqa: S308 - rendered templates


class SampleState(NamedTuple):
    state: str
    url: str


SampleStates = Callable[[list[int]], dict[int, SampleState]]
_sample_states: list[SampleStates] = []


def register_sample_states(provider: SampleStates) -> None:
    if provider not in _sample_states:
        _sample_states.append(provider)


def sample_states(ids: Iterable[int]) -> dict[int, SampleState]:
    """The state of each sample as the registered app says (none registered: an empty mapping)."""
    ids = list(ids)
    states: dict[int, SampleState] = {}
    for provider in _sample_states:
        states.update(provider(ids) if ids else {})
    return states
