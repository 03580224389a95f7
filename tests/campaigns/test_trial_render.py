"""Save-time trial renders run in a child process that is killed once past its time budget."""

import multiprocessing

import pytest

from campaigns import rendering
from campaigns.errors import InvalidInput
from campaigns.rendering import trial_render

OK = {"subject": "{{ tone }}", "html": "<p>{{ tone }}</p>", "text": "{{ tone }}"}


def test_a_valid_template_passes_and_a_bad_one_is_refused_with_its_field():
    trial_render(OK, {"tone"}, [{"tone": "warm"}, {"tone": "cold"}])
    with pytest.raises(InvalidInput) as exc:
        trial_render({**OK, "text": "{{ city }}"}, {"tone"}, [{"tone": "warm"}])
    assert exc.value.field == "template.text" and "city" in exc.value.message


def test_the_urlize_bomb_is_refused_by_the_sandbox():
    with pytest.raises(InvalidInput) as exc:
        trial_render({**OK, "html": "{{ (')'*58000 ~ 'x.')|urlize }}"}, {"tone"}, [{"tone": "warm"}])
    assert exc.value.field == "template.html" and "longest 58,002 characters" in exc.value.message


def test_a_child_past_the_budget_is_killed_and_the_save_refused(monkeypatch):
    # no time at all: the parent gives up at once, whatever the child is doing, and kills it
    monkeypatch.setattr(rendering, "TRIAL_RENDER_SECONDS", 0.0)
    monkeypatch.setattr(rendering, "TRIAL_PROCESS_SLACK_SECONDS", 0.0)
    with pytest.raises(InvalidInput) as exc:
        trial_render(OK, {"tone"}, [{"tone": "warm"}])
    assert exc.value.field == "template" and "takes longer than" in exc.value.message
    assert not [p for p in multiprocessing.active_children() if p.name == "mab-trial-render"]


def test_the_child_renders_under_the_callers_settings(monkeypatch):
    # a render time cap of a microsecond: the child must see it, though its server started earlier
    looped = {**OK, "html": "{% for i in range(200) %}{{ tone }}{% endfor %}"}
    trial_render(looped, {"tone"}, [{"tone": "warm"}])
    monkeypatch.setenv("MAB_RENDER_TIMEOUT_SECONDS", "0.000001")
    with pytest.raises(InvalidInput) as exc:
        trial_render(looped, {"tone"}, [{"tone": "warm"}])
    assert "ran longer than" in exc.value.message
