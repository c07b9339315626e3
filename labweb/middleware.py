from django.contrib.auth.middleware import LoginRequiredMiddleware


class LabLoginRequiredMiddleware(LoginRequiredMiddleware):
    """Sign-in everywhere; the API answers for itself (403 JSON from DRF rather than a login redirect)."""

    def process_view(self, request, view_func, view_args, view_kwargs):
        if request.path_info.startswith("/api/"):
            return None
        return super().process_view(request, view_func, view_args, view_kwargs)
