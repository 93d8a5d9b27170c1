"""Tests of fastpath up, fastpath demo, the workload and its report."""
