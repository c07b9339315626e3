from django.urls import path

from training import views

app_name = "training"
urlpatterns = [
    path("", views.job_list, name="job_list"),
    path("jobs/new/", views.job_create, name="job_create"),
    path("jobs/<int:pk>/", views.job_detail, name="job_detail"),
    path("jobs/<int:pk>/progress/", views.job_progress, name="job_progress"),
    path("jobs/<int:pk>/cancel/", views.job_cancel, name="job_cancel"),
    path("jobs/<int:pk>/resume/", views.job_resume, name="job_resume"),
    path("uploads/", views.upload_list, name="upload_list"),
    path("checkpoints/<int:pk>/", views.checkpoint_detail, name="checkpoint_detail"),
]
