"""Frame accounting of the node's core: counters and gaps in publication sequence numbers."""

from fcn_segmentation.stats import PipelineStats, SequenceGaps


def test_gaps_count_the_frames_between_those_seen_per_publisher():
    gaps = SequenceGaps()
    assert gaps.missed(b"camera", 7) == 0, "nothing is known before the first frame seen"
    assert gaps.missed(b"camera", 8) == 0
    assert gaps.missed(b"camera", 11) == 2
    assert gaps.missed(b"other", 100) == 0, "publishers are counted apart"
    assert gaps.missed(b"camera", 12) == 0
    assert gaps.missed(b"camera", 1) == 0, "a restarted publisher starts over"
    assert gaps.missed(b"camera", 3) == 1
    assert gaps.missed(b"camera", None) == 0, "an RMW without sequence numbers counts nothing"


def test_gaps_forget_the_publisher_heard_from_longest_ago():
    gaps = SequenceGaps(max_publishers=2)
    gaps.missed(b"a", 1)
    gaps.missed(b"b", 1)
    gaps.missed(b"a", 2)
    gaps.missed(b"c", 1)  # forgets b
    assert gaps.missed(b"a", 5) == 2
    assert gaps.missed(b"b", 5) == 0


def test_snapshot_reports_every_counter():
    stats = PipelineStats()
    stats.count("received", 3)
    stats.count("missed", 2)
    stats.count("dropped")
    stats.record(12.0, {"inference": 10.0})
    snap = stats.snapshot()
    assert (snap["received"], snap["missed"], snap["dropped"], snap["processed"]) == (3, 2, 1, 1)
    assert snap["latency_p50_ms"] == 12.0 and snap["inference_p50_ms"] == 10.0
