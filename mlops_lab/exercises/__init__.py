"""Per-chapter exercise checks. Each computes its expected answer from the chapter's own data or the
simulator (never a typed-in number) and reports through :mod:`mlops_lab.checks`."""
