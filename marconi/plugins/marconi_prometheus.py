"""
The C{prometheus} monitoring driver.
"""

from marconi.core.drivers import MonitoringDriverPlugin

prometheus = MonitoringDriverPlugin(
    name="prometheus",
    description="Prometheus metrics, scraped over HTTP (needs prometheus-client)",
    checker="marconi.observability.settings.checkPrometheus",
    factory="marconi.observability.prometheus.makeMonitor",
)
