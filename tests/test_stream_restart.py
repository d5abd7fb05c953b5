"""A restarted stream neither loses events nor sends an alert twice (issue 13): the file position
and the sent alert ids live in a checkpoint under the home; Kafka offsets are committed only after
a micro-batch is scored and its alerts written."""

from __future__ import annotations

import io
import json
import sys
import types
from pathlib import Path

from anomaly_pipeline.streaming import StreamConfig, StreamScorer
from anomaly_pipeline.streaming.checkpoint import StreamCheckpoint
from anomaly_pipeline.streaming.sources import FileSource, KafkaSource
from tests.test_streaming import STREAM_WINDOW, stream_events, tiny_model, to_records


def _scorer(checkpoint: StreamCheckpoint, out: io.StringIO) -> StreamScorer:
    return StreamScorer(tiny_model(), stream_config=StreamConfig(window=STREAM_WINDOW), alert_out=out,
                        explain="sync", explain_max=0, checkpoint=checkpoint)


def _alert_ids(out: io.StringIO) -> list[str]:
    return [json.loads(line)["alert_id"] for line in out.getvalue().splitlines()]


def test_a_file_stream_killed_mid_batch_resumes_without_losing_events_or_repeating_alerts(tmp_path: Path):
    records = to_records(stream_events().iloc[:3000])
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    state = tmp_path / "home"

    first_out, first_ids = io.StringIO(), []
    checkpoint = StreamCheckpoint.for_input(state, "file", str(path))
    scorer = _scorer(checkpoint, first_out)
    for k, batch in enumerate(FileSource(path, checkpoint=checkpoint, chunk_rows=250)):
        report = scorer.process(batch, "file")
        first_ids += report.scores["event_id"].tolist()
        if k == 5:
            break  # killed while batch 6 was scored: its end was never saved
    assert checkpoint.offset == sum(len(json.dumps(r)) + 1 for r in records[:1250])
    assert _alert_ids(first_out), "the first run raised alerts"

    second_out = io.StringIO()
    restarted = StreamCheckpoint.for_input(state, "file", str(path))  # a new process reads the file
    assert restarted.offset == checkpoint.offset
    scorer = _scorer(restarted, second_out)
    second_ids = []
    for batch in FileSource(path, checkpoint=restarted, chunk_rows=250):
        second_ids += scorer.process(batch, "file").scores["event_id"].tolist()

    # Nothing lost: every event was scored; only the batch being scored at the kill was read twice.
    assert set(first_ids) | set(second_ids) == {r["event_id"] for r in records}
    assert set(first_ids) & set(second_ids) == {r["event_id"] for r in records[1250:1500]}
    # No alert twice, though the re-read batch was scored again.
    alerts = _alert_ids(first_out) + _alert_ids(second_out)
    assert len(alerts) == len(set(alerts))
    assert restarted.offset == path.stat().st_size
    # Streamed again after it finished: nothing is read, nothing is sent.
    again = StreamCheckpoint.for_input(state, "file", str(path))
    assert list(FileSource(path, checkpoint=again)) == []


class _Message:
    def __init__(self, value: bytes) -> None:
        self._value = value

    def error(self) -> None:
        return None

    def value(self) -> bytes:
        return self._value


class _Consumer:
    """confluent-kafka's consumer interface as KafkaSource uses it, over a list of polls; records
    what the scorer had received each time offsets were committed."""

    def __init__(self, polls: list[list[bytes]], scorer_box: list) -> None:
        self.polls, self.scorer_box = list(polls), scorer_box
        self.commits: list[int] = []
        self.closed = False

    def subscribe(self, topics: list[str]) -> None:
        self.topics = topics

    def consume(self, num_messages: int, timeout: float) -> list[_Message]:
        return [_Message(v) for v in self.polls.pop(0)] if self.polls else []

    def commit(self, asynchronous: bool = True) -> None:
        assert asynchronous is False
        self.commits.append(self.scorer_box[0].metrics.events_received)

    def close(self) -> None:
        self.closed = True


def test_kafka_offsets_are_committed_only_after_a_batch_is_scored(tmp_path: Path):
    records = [json.dumps(r).encode() for r in to_records(stream_events().iloc[:900])]
    box: list = []
    consumer = _Consumer([records[:300], records[300:600], records[600:]], box)
    checkpoint = StreamCheckpoint.for_input(tmp_path, "kafka", "events@test")
    out = io.StringIO()
    box.append(_scorer(checkpoint, out))
    source = KafkaSource("events", consumer=consumer, checkpoint=checkpoint, stop_after_idle_s=0.0)
    batches = iter(source)
    box[0].process(next(batches), "kafka")
    assert consumer.commits == []  # scored, but the scorer has not asked for more yet
    second = next(batches)
    assert consumer.commits == [300]  # the first batch, after it was scored
    del second  # killed while scoring the second batch: its offsets are never committed
    batches.close()
    assert consumer.commits == [300] and consumer.closed

    consumer = _Consumer([records[300:600], records[600:]], box)  # the broker redelivers from the commit
    box[0] = _scorer(StreamCheckpoint.for_input(tmp_path, "kafka", "events@test"), out)
    box[0].run(KafkaSource("events", consumer=consumer, checkpoint=box[0].checkpoint, stop_after_idle_s=0.0))
    assert consumer.commits == [300, 600]
    alerts = _alert_ids(out)
    assert len(alerts) == len(set(alerts))


def test_kafka_auto_commit_is_off_whatever_the_extra_config_says(monkeypatch):
    configs: list[dict] = []

    class Consumer:
        def __init__(self, config: dict) -> None:
            configs.append(config)

        def subscribe(self, topics: list[str]) -> None:
            pass

    monkeypatch.setitem(sys.modules, "confluent_kafka", types.SimpleNamespace(Consumer=Consumer))
    KafkaSource("events", bootstrap_servers="broker:9092", extra_config={"enable.auto.commit": True})
    assert configs[0]["enable.auto.commit"] is False and configs[0]["bootstrap.servers"] == "broker:9092"
