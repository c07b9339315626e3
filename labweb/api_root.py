"""The one `/api/` root. Each app hands over its router and names its other endpoints; a review or training
app adds its own line in `labweb/urls.py`, and the root lists every endpoint of every app."""

from rest_framework.routers import BaseRouter, DefaultRouter


class ApiRouter(DefaultRouter):
    def __init__(self) -> None:
        super().__init__()
        self.endpoints: dict[str, str] = {}

    def include(self, router: BaseRouter, endpoints: dict[str, str] | None = None) -> None:
        """Serve `router`'s viewsets here, and list `endpoints` (root key -> URL name) beside them."""
        self.registry.extend(router.registry)
        self.endpoints |= endpoints or {}

    def get_api_root_view(self, api_urls=None):
        listed = {prefix: self.routes[0].name.format(basename=basename) for prefix, _, basename in self.registry}
        return self.APIRootView.as_view(api_root_dict=dict(sorted((listed | self.endpoints).items())))
