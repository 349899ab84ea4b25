"""A selecting route through a real router to real sims: easy prompts to the cheap model."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.component.router.conftest import TOKEN, RunningRouter, address
from tests.component.sim.conftest import RunningSim, make_settings
from tests.unit.router.test_selection import EASY, HARD

SELECTION = {
    "policy": "cost",
    "strongShare": 0.4,
    "candidates": [
        {"model": "small", "inputPricePerMillionTokens": 0.2, "outputPricePerMillionTokens": 0.6},
        {
            "model": "big",
            "inputPricePerMillionTokens": 3.0,
            "outputPricePerMillionTokens": 15.0,
            "tier": 1,
        },
    ],
}


@pytest.fixture(scope="module")
def small_and_big() -> Iterator[tuple[RunningSim, RunningSim]]:
    small = make_settings().model_copy(update={"model": "small"})
    big = make_settings().model_copy(update={"model": "big"})
    with RunningSim(small) as a, RunningSim(big) as b:
        yield a, b


def ask(router: RunningRouter, body: dict) -> httpx.Response:
    return httpx.post(
        router.base_url + "/v1/chat/completions",
        json={"model": "auto", "max_tokens": 4, **body},
        timeout=30,
    )


def test_easy_to_small_hard_to_big_named_in_body_and_header(small_and_big) -> None:
    small, big = small_and_big
    with RunningRouter() as router:
        pushed = router.push(
            {
                "small": [address(small)],
                "big": [address(big)],
                "auto": {"route": {"selection": SELECTION}, "routeId": "team/auto"},
            }
        )
        assert pushed.status_code == 200, pushed.text
        easy, hard = ask(router, EASY), ask(router, HARD)
        assert easy.status_code == 200 and hard.status_code == 200, (easy.text, hard.text)
        assert easy.json()["model"] == "small" and easy.headers["x-inferscale-model"] == "small"
        assert hard.json()["model"] == "big" and hard.headers["x-inferscale-model"] == "big"
        assert router.metric("inferscale_router_selections_total", route="auto") == 2
        assert router.metric("inferscale_router_selections_total", model="small") == 1
        # The easy answer cost less than on big; the hard one saved nothing.
        assert router.metric("inferscale_router_selection_cost_saved_total", route="auto") > 0
        # What the operator sums into the route's status.
        report = httpx.get(
            router.base_url + "/admin/v1/spend",
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=10,
        ).json()["routes"]["team/auto"]
        assert report["selections"] == {"small": 1, "big": 1} and report["costSaved"] > 0
        plain = httpx.post(
            router.base_url + "/v1/chat/completions",
            json={"model": "small", **EASY, "max_tokens": 2},
            timeout=30,
        )
        assert "x-inferscale-model" not in plain.headers
        # A stream names the model too (its headers go out before the answer is known), and so
        # does an Anthropic Messages answer.
        streamed = ask(router, {**HARD, "stream": True})
        assert streamed.status_code == 200 and streamed.headers["x-inferscale-model"] == "big"
        assert "data: [DONE]" in streamed.text
        messages = httpx.post(
            router.base_url + "/v1/messages",
            json={"model": "auto", "max_tokens": 4, **EASY},
            timeout=30,
        )
        assert messages.status_code == 200, messages.text
        assert messages.headers["x-inferscale-model"] == "small"


def test_candidates_must_be_other_plain_models_of_the_table(small_and_big) -> None:
    small, _ = small_and_big
    with RunningRouter() as router:
        dangling = router.push(
            {"small": [address(small)], "auto": {"route": {"selection": SELECTION}}}
        )
        assert dangling.status_code == 400 and "candidate 'big'" in dangling.text
        twice = {**SELECTION, "candidates": [SELECTION["candidates"][0]] * 2}
        doubled = router.push({"small": [address(small)], "auto": {"route": {"selection": twice}}})
        assert doubled.status_code == 400 and "distinct" in doubled.text
