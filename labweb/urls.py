from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from curation.api import urls as curation_api
from evaluation.api import urls as evaluation_api
from generation.api import urls as generation_api
from labweb import views
from labweb.api_root import ApiRouter
from labweb.monitor import views as monitor_views
from labweb.signin import LimitedAdminAuthenticationForm, LimitedAuthenticationForm, ObtainToken
from review.api import urls as review_api
from training.api import urls as training_api

admin.site.login_form = LimitedAdminAuthenticationForm
api = ApiRouter()
api.include(curation_api.router, curation_api.ENDPOINTS)
api.include(generation_api.router)
api.include(training_api.router)
api.include(review_api.router, review_api.ENDPOINTS)
api.include(evaluation_api.router)

urlpatterns = [
    path("", views.home, name="home"),
    path("health/", views.health, name="health"),
    path("healthz", monitor_views.healthz, name="healthz"),
    path("readyz", monitor_views.readyz, name="readyz"),
    path("operations/", include("labweb.monitor.urls")),
    path("accounts/login/", auth_views.LoginView.as_view(form_class=LimitedAuthenticationForm), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("taxonomy/", include("curation.urls")),
    path("generation/", include("generation.urls")),
    path("review/", include("review.urls")),
    path("training/", include("training.urls")),
    path("api/auth/token/", ObtainToken.as_view(), name="api-token"),
    path("evaluation/", include("evaluation.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/", include(curation_api.urlpatterns)),
    path("api/", include(api.urls)),
    path("api/review/", include(review_api.urlpatterns)),
]

handler404 = "labweb.views.not_found"
