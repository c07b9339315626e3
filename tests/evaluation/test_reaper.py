"""The periodic reaper hands back an evaluation whose worker stopped renewing its lease, and only that one."""

from datetime import timedelta

import pytest
from django.utils import timezone

from evaluation.models import EvaluationJob
from labweb import jobs
from tests.test_api_roles import world  # noqa: F401 (the fixture)

pytestmark = pytest.mark.django_db


def test_a_lapsed_evaluation_is_queued_again_and_a_live_one_is_left(world, django_capture_on_commit_callbacks):  # noqa: F811
    lapsed = EvaluationJob.objects.get(pk=world.evaluation)
    live = EvaluationJob.objects.get(pk=world.stopped_evaluation)
    now = timezone.now()
    EvaluationJob.objects.filter(pk=lapsed.pk).update(
        status=jobs.Status.RUNNING, lease_owner="gone:1", lease_until=now - timedelta(seconds=1)
    )
    EvaluationJob.objects.filter(pk=live.pk).update(
        status=jobs.Status.RUNNING, lease_owner="alive:2", lease_until=now + timedelta(seconds=60)
    )
    with django_capture_on_commit_callbacks() as sent:
        assert jobs.reap_all()["evaluation"] == 1
    assert len(sent) == 1  # its task, once the hand-back commits
    lapsed.refresh_from_db()
    live.refresh_from_db()
    assert (lapsed.lease_owner, lapsed.lease_until, lapsed.status) == ("", None, jobs.Status.RUNNING)
    assert lapsed.events.filter(message__contains="stopped answering").count() == 1
    assert (live.lease_owner, live.status) == ("alive:2", jobs.Status.RUNNING)
    with django_capture_on_commit_callbacks() as again:
        assert jobs.reap_all()["evaluation"] == 0  # nothing lapsed is left
    assert again == []
