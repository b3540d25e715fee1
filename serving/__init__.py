"""Inference without torch: the core (``core``), the gRPC server (``server``), its client (``client``)
and batch jobs (``batch``)."""
