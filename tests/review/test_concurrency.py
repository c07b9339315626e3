"""Real concurrency against the live server: two API clients at once on one sample, and two reviewers claiming
from one queue at once. Each client is its own HTTP connection, served on its own thread and database connection."""

import json
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from json import dumps

import pytest
from rest_framework.authtoken.models import Token

from review.models import Decision, ReviewItem
from tests.support.review import assert_consistent

pytestmark = pytest.mark.django_db(transaction=True)


@dataclass
class Answer:
    status_code: int
    text: str

    def json(self):
        return json.loads(self.text)


@dataclass
class Client:
    """A script's HTTP client: its own connection for every request, its token in the header."""

    base: str
    token: str

    def post(self, path: str, *, json: dict, headers: dict | None = None) -> Answer:
        request = urllib.request.Request(
            self.base + path,
            data=dumps(json).encode(),
            method="POST",
            headers={"Authorization": f"Token {self.token}", "Content-Type": "application/json", **(headers or {})},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return Answer(response.status, response.read().decode())
        except urllib.error.HTTPError as error:
            return Answer(error.code, error.read().decode())


def client(live_server, user) -> Client:
    return Client(live_server.url, Token.objects.create(user=user).key)


def together(*calls):
    """Run the calls on threads released at the same instant; their results in order."""
    barrier = threading.Barrier(len(calls))
    results = [None] * len(calls)

    def run(index, call):
        barrier.wait()
        results[index] = call()

    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_two_reviewers_deciding_one_sample_at_once_one_wins_and_the_other_is_told(
    live_server, make_samples, reviewer, second_reviewer
):
    make_samples(1)
    first, second = client(live_server, reviewer), client(live_server, second_reviewer)
    for item in ReviewItem.objects.order_by("pk")[:8]:
        url = f"/api/review/items/{item.pk}/decide/"
        a, b = together(
            lambda url=url: first.post(url, json={"action": "approve"}, headers={"If-Match": '"1"'}),
            lambda url=url: second.post(url, json={"action": "reject", "reason": "incorrect", "version": 1}),
        )
        statuses = sorted([a.status_code, b.status_code])
        assert statuses in ([200, 409], [200, 412]), (a.text, b.text)
        loser = a if a.status_code != 200 else b
        assert "changed since you opened it" in loser.json()["error"]["message"]
        assert Decision.objects.filter(item_id=item.pk).count() == 1
        assert ReviewItem.objects.get(pk=item.pk).version == 2
    assert_consistent()


def test_two_reviewers_claiming_from_one_queue_never_get_the_same_sample(
    live_server, make_samples, reviewer, second_reviewer
):
    make_samples(2)  # 10 samples in each of three leaves
    first, second = client(live_server, reviewer), client(live_server, second_reviewer)
    for leaf in (
        "compositional_skills/other/x",
        "compositional_skills/writing/jokes",
        "compositional_skills/writing/poems",
    ):
        body = {"filters": {"path": leaf}, "size": 8}
        a, b = together(
            lambda body=body: first.post("/api/review/claim/", json=body),
            lambda body=body: second.post("/api/review/claim/", json=body),
        )
        assert (a.status_code, b.status_code) == (200, 200), (a.text, b.text)
        mine, theirs = set(a.json()["ids"]), set(b.json()["ids"])
        assert not mine & theirs
        assert len(mine | theirs) == 10 and max(len(mine), len(theirs)) == 8
        held = dict(ReviewItem.objects.filter(leaf_path=leaf).values_list("pk", "claimed_by__username"))
        assert {pk for pk, name in held.items() if name == "rene"} == mine
        assert {pk for pk, name in held.items() if name == "rita"} == theirs
