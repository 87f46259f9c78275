"""Load scenarios: closed- and open-loop sweeps and batching grids, one point at a time (docs/load.md).

- ``scenarios``: the ``load:`` block's typed settings and the (scenario, point) pairs it names;
- ``schedule``: open-loop arrival times, constant or Poisson;
- ``worker`` and ``generator``: the load generator, worker processes of threads on serveprof's lean connections;
- ``windows``: measurement windows, perf_analyzer's stability rule and the point's statistics;
- ``point``: one point against a fresh server (samplers, the server's metrics), ``results``: its files;
- ``report``: latency against throughput, the batching heatmap, the best configuration under the SLO.
"""
