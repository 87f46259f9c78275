"""The measurement engine: protocol, statistics, resource sampling, result files, provenance.

Only the statistics are imported here; the protocol and CLIs load the clients (gRPC,
requests) when they run.
"""

from serveprof.measure.stats import latency_stats

__all__ = ["latency_stats"]
