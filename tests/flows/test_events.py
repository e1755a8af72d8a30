"""The train-completed event: one function emits it for the train flow and for rank 0 under torchrun."""

from __future__ import annotations

from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.events import TRAIN_EVENT, emit_train_completed, train_event_fields

RESULT = {"run_id": "r1", "run_dir": "/ws/models/r1", "steps": 8, "final_checkpoint": "/ws/models/r1/final.pt"}


def test_fields_name_the_run_and_its_datasets():
    fields = train_event_fields(RESULT, ["a", "b"], "/ws")
    assert TRAIN_EVENT == "mmcaps.train.completed"
    assert fields["resource"] == {"prefect.resource.id": "mmcaps.run.r1", "mmcaps.workspace": "/ws"}
    assert [r["prefect.resource.id"] for r in fields["related"]] == ["mmcaps.dataset.a", "mmcaps.dataset.b"]
    assert fields["payload"]["run_id"] == "r1" and fields["payload"]["steps"] == 8


def test_outside_a_flow_without_an_api_nothing_is_emitted():
    # (a torchrun rank with no Prefect server: emitting would start a throwaway server just to drop the event)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert PREFECT_API_URL.value() is None
        assert emit_train_completed(RESULT, ["a"], "/ws") is False
