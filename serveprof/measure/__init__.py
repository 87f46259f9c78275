"""The measurement engine: the procedure, cold start, aggregation, statistics, resource sampling, result files, provenance.

Only the statistics are imported here; the procedure and the commands load the clients
(gRPC, requests) when they run.
"""

from serveprof.measure.stats import latency_stats

__all__ = ["latency_stats"]
