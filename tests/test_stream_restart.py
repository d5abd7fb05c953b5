"""A restarted stream neither loses events nor sends an alert twice (issue 13): the file position
and the sent alert ids live in a checkpoint under the home; Kafka offsets are committed only after
a micro-batch is scored and its alerts written."""

from __future__ import annotations

import gzip
import io
import json
import sys
import types
from pathlib import Path

import pytest

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


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz"])
def test_a_csv_stream_killed_mid_batch_resumes_without_losing_events_or_repeating_alerts(tmp_path: Path, suffix):
    """The other file formats resume after the records already scored (issue 13: a restarted
    scorer re-read its file from the start and sent 85 alerts twice). Gzip cannot seek, so the
    position is a record count, not a byte offset."""
    events = stream_events().iloc[:2000]
    path = tmp_path / f"events{suffix}"
    csv = events.drop(columns=["source", "raw_ref"]).to_csv(index=False).encode()
    path.write_bytes(gzip.compress(csv) if suffix.endswith(".gz") else csv)
    ids = events["event_id"].tolist()
    state = tmp_path / "home"

    first_out, first_ids = io.StringIO(), []
    checkpoint = StreamCheckpoint.for_input(state, "file", str(path))
    scorer = _scorer(checkpoint, first_out)
    for k, batch in enumerate(FileSource(path, checkpoint=checkpoint, chunk_rows=250)):
        first_ids += scorer.process(batch, "file").scores["event_id"].tolist()
        if k == 5:
            break  # killed while batch 6 was scored: its end was never saved
    assert checkpoint.rows == 1250 and checkpoint.offset == 0
    assert _alert_ids(first_out), "the first run raised alerts"

    second_out = io.StringIO()
    restarted = StreamCheckpoint.for_input(state, "file", str(path))  # a new process reads the file
    assert restarted.rows == 1250
    source = FileSource(path, checkpoint=restarted, chunk_rows=250)
    assert source.position().startswith("record 1,250")
    scorer = _scorer(restarted, second_out)
    second_ids = []
    for batch in source:
        second_ids += scorer.process(batch, "file").scores["event_id"].tolist()

    assert set(first_ids) | set(second_ids) == set(ids)  # nothing lost
    assert set(first_ids) & set(second_ids) == set(ids[1250:1500])  # only the batch scored at the kill
    alerts = _alert_ids(first_out) + _alert_ids(second_out)
    assert len(alerts) == len(set(alerts))  # no alert twice
    assert restarted.rows == len(ids)
    again = StreamCheckpoint.for_input(state, "file", str(path))
    assert list(FileSource(path, checkpoint=again)) == []  # streamed again after it finished: nothing


ZEEK_HEADER = (
    "#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n#path\tconn\n"
    "#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\tservice\tduration\torig_bytes\t"
    "resp_bytes\torig_pkts\tresp_pkts\n"
    "#types\ttime\tstring\taddr\tport\taddr\tport\tenum\tstring\tinterval\tcount\tcount\tcount\tcount\n"
)


def _zeek_lines(first: int, n: int) -> str:
    return "".join(f"{1767600000 + i}.0\tC{i}\t10.0.0.{i % 50}\t{40000 + i}\t10.0.1.{i % 7}\t443\ttcp\tssl\t0.5\t"
                   f"{100 + i}\t2000\t5\t6\n" for i in range(first, first + n))


def test_a_zeek_log_resumes_after_its_scored_records_and_a_replaced_file_starts_over(tmp_path: Path):
    path = tmp_path / "conn.log"
    path.write_text(ZEEK_HEADER + _zeek_lines(0, 700))
    checkpoint = StreamCheckpoint.for_input(tmp_path / "home", "file", str(path))
    seen, sizes = [], []
    for k, batch in enumerate(FileSource(path, "zeek", checkpoint=checkpoint, chunk_rows=200)):
        seen += batch.events["event_id"].tolist()
        sizes.append(len(batch.events) + len(batch.quarantine))
        if k == 1:
            break  # killed while the second batch was handled
    done = sizes[0]
    assert checkpoint.rows == done and len(seen) == sum(sizes) > done

    with path.open("a") as handle:  # the log grew while the scorer was down
        handle.write(_zeek_lines(700, 100))
    restarted = StreamCheckpoint.for_input(tmp_path / "home", "file", str(path))
    rest = [i for b in FileSource(path, "zeek", checkpoint=restarted, chunk_rows=200) for i in b.events["event_id"]]
    assert rest == [f"zeek:C{i}" for i in range(done, 800)] and restarted.rows == 800
    assert set(seen) - set(rest) == {f"zeek:C{i}" for i in range(done)}

    path.write_text(ZEEK_HEADER.replace("#path\tconn", "#path\tconn\n#open\t2026-01-06") + _zeek_lines(5000, 50))
    rotated = StreamCheckpoint.for_input(tmp_path / "home", "file", str(path))
    fresh = [i for b in FileSource(path, "zeek", checkpoint=rotated, chunk_rows=200) for i in b.events["event_id"]]
    assert fresh == [f"zeek:C{i}" for i in range(5000, 5050)]  # a new file is read from its start
