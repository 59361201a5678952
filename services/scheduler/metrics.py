"""The scheduler's Prometheus metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class SchedulerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.experiments = Gauge("chaosbus_experiments", "Experiments by kind and phase", ["kind", "phase"],
                                 registry=self.registry)
        self.commands = Counter("chaosbus_scheduler_commands_sent_total", "Node commands sent", ["kind"],
                                registry=self.registry)
        self.actions = Counter("chaosbus_scheduler_target_actions_total", "Per-target actions sent",
                               ["kind", "op"], registry=self.registry)
        self.decisions = Counter("chaosbus_scheduler_decisions_total", "Decisions published",
                                 registry=self.registry)
        self.errors = Counter("chaosbus_scheduler_errors_total", "Errors by reason", ["reason"],
                              registry=self.registry)
        self.memory_writes = Counter("chaosbus_scheduler_memory_writes_total",
                                     "Experiment memories written to (or purged from) KV scheduler",
                                     registry=self.registry)
        self.object_writes = Counter("chaosbus_scheduler_object_writes_total",
                                     "ObjectWrites sent (Schedule children, orchestration status) by op and reason",
                                     ["op", "reason"], registry=self.registry)
        self.workflows = Gauge("chaosbus_workflows", "Workflows by phase (running, accomplished, aborted, invalid)",
                               ["phase"], registry=self.registry)
        self.probes = Counter("chaosbus_scheduler_status_check_probes_total", "StatusCheck probes by outcome",
                              ["outcome"], registry=self.registry)
        self.leader = Gauge("chaosbus_scheduler_leader", "1 while this instance holds the leader lease",
                            registry=self.registry)
