"""Prints the RDS IAM auth token botocore signs for the inputs of rds_auth.rs's test, at a fixed time, so the
Rust signer is checked against an implementation that is not ours:

    .venv/bin/python services/server/tests/rds_token.py > services/server/tests/rds_token_botocore.txt
"""
import datetime
from unittest import mock

import botocore.session

session = botocore.session.Session()
session.set_credentials("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
client = session.create_client("rds", region_name="us-east-1")
fixed = datetime.datetime(2026, 12, 2, 12, 0, 0, tzinfo=datetime.timezone.utc)
with mock.patch("botocore.auth.get_current_datetime", return_value=fixed.replace(tzinfo=None)):
    print(client.generate_db_auth_token(
        DBHostname="db.cluster-abc.us-east-1.rds.amazonaws.com", Port=5432, DBUsername="tablecrypt"))
