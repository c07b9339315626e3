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
    path("datasets/", views.dataset_list, name="dataset_list"),
    path("datasets/new/", views.dataset_create, name="dataset_create"),
    path("datasets/<int:pk>/", views.dataset_detail, name="dataset_detail"),
    path("datasets/<int:pk>/train/", views.dataset_train, name="dataset_train"),
    path("datasets/<int:pk>/files/<slug:role>.jsonl", views.dataset_download, name="dataset_download"),
]
