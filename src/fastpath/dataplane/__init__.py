"""The fast path: HTTP/2 connections on uvloop, streams carried between clients and backends."""
