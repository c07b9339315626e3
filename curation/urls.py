from django.urls import path

from curation import views

app_name = "curation"
urlpatterns = [
    path("", views.tree, name="tree"),
    path("tree/children/", views.tree_children, name="tree_children"),
    path("leaf/new/", views.leaf_create, name="leaf_create"),
    path("leaf/<int:pk>/", views.leaf_detail, name="leaf_detail"),
    path("leaf/<int:pk>/update/", views.leaf_update, name="leaf_update"),
    path("leaf/<int:pk>/validate/", views.leaf_validate, name="leaf_validate"),
    path("leaf/<int:pk>/move/", views.leaf_move, name="leaf_move"),
    path("leaf/<int:pk>/delete/", views.leaf_delete, name="leaf_delete"),
    path("leaf/<int:pk>/qna.yaml", views.leaf_yaml, name="leaf_yaml"),
    path("leaf/<int:pk>/history/", views.leaf_history, name="leaf_history"),
    path("leaf/<int:pk>/history/<int:number>/", views.leaf_revision, name="leaf_revision"),
    path("deleted/", views.deleted_list, name="deleted_list"),
    path("leaf/<int:pk>/seeds/add/", views.seed_add, name="seed_add"),
    path("seed/<int:pk>/update/", views.seed_update, name="seed_update"),
    path("seed/<int:pk>/delete/", views.seed_delete, name="seed_delete"),
    path("seed/<int:pk>/move/", views.seed_move, name="seed_move"),
    path("leaf/<int:pk>/documents/add/", views.document_add, name="document_add"),
    path("document/<int:pk>/", views.document_detail, name="document_detail"),
    path("document/<int:pk>/delete/", views.document_delete, name="document_delete"),
    path("import/", views.import_start, name="import"),
    path("import/<int:pk>/", views.import_detail, name="import_detail"),
    path("import/jobs/<int:pk>/", views.import_job, name="import_job"),
    path("import/jobs/<int:pk>/confirm/", views.import_confirm, name="import_confirm"),
    path("import/jobs/<int:pk>/cancel/", views.import_job_cancel, name="import_job_cancel"),
    path("imports/", views.import_list, name="import_list"),
    path("export.tar.gz", views.export, name="export"),
    path("diff/", views.diff, name="diff"),
    path("snapshots/new/", views.snapshot_create, name="snapshot_create"),
]
