"""The Kafka source against a real broker: runs when KAFKA_BOOTSTRAP_SERVERS is set (README,
"Real-time scoring"), skipped with that reason otherwise."""

from __future__ import annotations

import json
import os
import uuid

import pytest

from anomaly_pipeline.streaming import KafkaSource, StreamConfig, StreamScorer
from tests.test_streaming import STREAM_WINDOW, stream_events, tiny_model, to_records

BOOTSTRAP = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
pytestmark = pytest.mark.skipif(not BOOTSTRAP, reason="KAFKA_BOOTSTRAP_SERVERS is not set: no Kafka broker to test against")


def test_kafka_topic_is_scored_and_malformed_messages_quarantined():
    confluent_kafka = pytest.importorskip("confluent_kafka", reason="pip install 'anomaly-pipeline[kafka]'")
    topic = f"anomaly-pipeline-test-{uuid.uuid4().hex[:8]}"
    records = to_records(stream_events().iloc[:800])
    producer = confluent_kafka.Producer({"bootstrap.servers": BOOTSTRAP})
    for i, record in enumerate(records):
        producer.produce(topic, json.dumps(record).encode())
        if i == 400:
            producer.produce(topic, b"{broken")
    assert producer.flush(30) == 0
    scorer = StreamScorer(tiny_model(), stream_config=StreamConfig(window=STREAM_WINDOW))
    source = KafkaSource(topic, bootstrap_servers=BOOTSTRAP, group_id=f"test-{topic}", stop_after_idle_s=5.0)
    metrics = scorer.run(source, source_name="kafka")
    assert metrics.events_scored == 800
    assert metrics.events_quarantined == 1

