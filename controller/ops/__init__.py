"""Operations plumbing: systemd notify, Prometheus metrics."""
