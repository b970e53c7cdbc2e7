"""Copies of the spend log elsewhere: the Postgres sink and its SQL."""
