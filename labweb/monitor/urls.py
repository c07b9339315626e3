from django.urls import path

from labweb.monitor import views

app_name = "monitor"
urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("<slug:kind>/<int:pk>/cancel/", views.job_cancel, name="cancel"),
    path("<slug:kind>/<int:pk>/retry/", views.job_retry, name="retry"),
]
