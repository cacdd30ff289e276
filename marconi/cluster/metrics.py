"""
The cluster's membership and stand-in state as Prometheus metrics, read
from the router at each scrape.
"""

from typing import Any, Iterator

from marconi.cluster.membership import DOWN


class ClusterCollector:
    """
    A Prometheus collector (registered with the node's registry) of:

     - C{marconi_cluster_node_up{node}}: 1 while this node sees C{node} up
       (itself included), 0 while it sees it down;
     - C{marconi_cluster_node_standin{node}}: 1 while C{node} is down and
       its queues are served by stand-ins from its store;
     - C{marconi_cluster_store_reachable{nodes}}: 1 while a store this node
       opens answers its pings (labelled by the nodes keeping their queues
       in it);
     - C{marconi_cluster_standin_requests_total{node}}: requests this node
       served as a stand-in for C{node}.
    """

    def __init__(self, router: Any) -> None:
        self._router = router

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        router = self._router
        up = GaugeMetricFamily(
            "marconi_cluster_node_up",
            "Whether this node sees a cluster node up (1) or down (0).",
            labels=["node"],
        )
        standin = GaugeMetricFamily(
            "marconi_cluster_node_standin",
            "Whether a down node's queues are served by stand-ins (1).",
            labels=["node"],
        )
        for name in router.config.names:
            if name == router.config.nodeName:
                up.add_metric([name], 1)
                continue
            down = router.membership.states[name].state == DOWN
            up.add_metric([name], 0 if down else 1)
            standin.add_metric([name], 1 if down and router.standInFor(name) else 0)
        yield up
        yield standin
        if router.stores is not None:
            reachable = GaugeMetricFamily(
                "marconi_cluster_store_reachable",
                "Whether a store this node opens answers its pings.",
                labels=["nodes"],
            )
            for store in router.stores.describe():
                reachable.add_metric(
                    [",".join(store["nodes"])], 1 if store["reachable"] else 0
                )
            yield reachable
        served = CounterMetricFamily(
            "marconi_cluster_standin_requests",
            "Requests this node served as a stand-in for a down node.",
            labels=["node"],
        )
        for name, count in sorted(router.standins.items()):
            served.add_metric([name], count)
        yield served
