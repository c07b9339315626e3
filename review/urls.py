from django.urls import path

from review import views

app_name = "review"
urlpatterns = [
    path("", views.queue, name="queue"),
    path("samples/<int:pk>/", views.screen, name="screen"),
    path("samples/<int:pk>/decide/", views.decide, name="decide"),
    path("undo/", views.undo, name="undo"),
    path("claim/", views.claim, name="claim"),
    path("bulk/", views.bulk_confirm, name="bulk_confirm"),
    path("bulk/start/", views.bulk_start, name="bulk_start"),
    path("bulk/<int:pk>/", views.bulk_job, name="bulk_job"),
    path("bulk/<int:pk>/undo/", views.bulk_undo, name="bulk_undo"),
    path("bulk/<int:pk>/resume/", views.bulk_resume, name="bulk_resume"),
    path("bulk/<int:pk>/cancel/", views.bulk_cancel, name="bulk_cancel"),
    path("progress/", views.progress, name="progress"),
    path("agreement/", views.agreement, name="agreement"),
]
