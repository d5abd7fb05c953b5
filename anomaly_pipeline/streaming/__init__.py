"""Real-time scoring: streaming state, the micro-batch scorer and its event sources."""

from anomaly_pipeline.streaming.scorer import ChampionModel, StreamScorer, load_champion
from anomaly_pipeline.streaming.sources import FileSource, KafkaSource, LineSource, records_to_events
from anomaly_pipeline.streaming.state import StreamConfig, StreamState

__all__ = ["ChampionModel", "FileSource", "KafkaSource", "LineSource", "StreamConfig", "StreamScorer",
           "StreamState", "load_champion", "records_to_events"]
