"""Places on generation's pages that the apps above it fill in (generation imports none of them).

An app registers a panel in its `AppConfig.ready()`: `register_run_panel(fn)`, where `fn(request, run)`
returns the HTML of a section for the run page (or "" for none).
"""

from collections.abc import Callable

from django.http import HttpRequest
from django.utils.safestring import SafeString, mark_safe

RunPanel = Callable[[HttpRequest, object], str]
_run_panels: list[RunPanel] = []


def register_run_panel(panel: RunPanel) -> None:
    if panel not in _run_panels:
        _run_panels.append(panel)


def run_panels(request: HttpRequest, run) -> list[SafeString]:
    return [mark_safe(html) for html in (panel(request, run) for panel in _run_panels) if html]  # noqa: S308 - rendered templates
