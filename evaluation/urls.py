from django.urls import path

from evaluation import views

app_name = "evaluation"
urlpatterns = [
    path("", views.job_list, name="job_list"),
    path("new/", views.job_create, name="job_create"),
    path("compare/", views.job_compare, name="job_compare"),
    path("playground/", views.playground, name="playground"),
    path("playground/stream/", views.playground_stream, name="playground_stream"),
    path("<int:pk>/", views.job_detail, name="job_detail"),
    path("<int:pk>/progress/", views.job_progress, name="job_progress"),
    path("<int:pk>/answers/", views.job_answers, name="job_answers"),
    path("<int:pk>/export.<str:kind>", views.job_export, name="job_export"),
    path("<int:pk>/cancel/", views.job_cancel, name="job_cancel"),
    path("<int:pk>/resume/", views.job_resume, name="job_resume"),
]
