from django.urls import path

from generation import views

app_name = "generation"
urlpatterns = [
    path("", views.run_list, name="run_list"),
    path("runs/new/", views.run_create, name="run_create"),
    path("runs/new/estimate/", views.run_estimate, name="run_estimate"),
    path("runs/<int:pk>/", views.run_detail, name="run_detail"),
    path("runs/<int:pk>/progress/", views.run_progress, name="run_progress"),
    path("runs/<int:pk>/cancel/", views.run_cancel, name="run_cancel"),
    path("runs/<int:pk>/resume/", views.run_resume, name="run_resume"),
    path("runs/<int:pk>/retry-failed/", views.run_retry_failed, name="run_retry_failed"),
    path("teachers/", views.teachers, name="teachers"),
    path("teachers/new/", views.teacher_create, name="teacher_create"),
    path("teachers/default/", views.teacher_default, name="teacher_default"),
    path("teachers/<int:pk>/", views.teacher_edit, name="teacher_edit"),
    path("teachers/<int:pk>/delete/", views.teacher_remove, name="teacher_delete"),
    path("samples/", views.sample_list, name="sample_list"),
    path("samples/<int:pk>/", views.sample_detail, name="sample_detail"),
]
