"""The batch key migration of bench/src/bin/migration.rs, written the way a platform engineer would with boto3:
a thread per account, AssumeRole, ListTables, UpdateTable every table to key B (botocore's default retries),
then poll DescribeTable once a second until every table is ACTIVE with SSE ENABLED on key B. Run against the
same emulator (with the fleet reloaded on key A) in the same benchmark run.

    .venv/bin/python bench/migrate_boto3.py --endpoint http://127.0.0.1:4599 --accounts 100
"""

import argparse
import json
import threading
import time
import urllib.request

import boto3


def counters(endpoint):
    with urllib.request.urlopen(f"{endpoint}/_emulator/counters") as response:
        update = json.load(response).get("UpdateTable", {})
    return update.get("ok", 0), update.get("ThrottlingException", 0)


def migrate_account(endpoint, account, to_alias, results):
    sts = boto3.client("sts", endpoint_url=endpoint, region_name="us-east-1",
                       aws_access_key_id="AKIAHUBTEST000000000", aws_secret_access_key="hub-secret")
    creds = sts.assume_role(RoleArn=f"arn:aws:iam::{account}:role/member", RoleSessionName="migrate")["Credentials"]
    ddb = boto3.client("dynamodb", endpoint_url=endpoint, region_name="eu-west-1",
                       aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"],
                       aws_session_token=creds["SessionToken"])
    kms = boto3.client("kms", endpoint_url=endpoint, region_name="eu-west-1",
                       aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"],
                       aws_session_token=creds["SessionToken"])
    key_b = kms.describe_key(KeyId=to_alias)["KeyMetadata"]["Arn"]
    names = [n for page in ddb.get_paginator("list_tables").paginate() for n in page["TableNames"]]
    pending, failed = set(), 0
    for name in names:
        try:
            ddb.update_table(TableName=name, SSESpecification={"Enabled": True, "SSEType": "KMS",
                                                                "KMSMasterKeyId": key_b})
            pending.add(name)
        except Exception:  # throttled past botocore's retries, or refused
            failed += 1
    while pending:
        time.sleep(1)
        for name in list(pending):
            try:
                table = ddb.describe_table(TableName=name)["Table"]
            except Exception:
                continue
            sse = table.get("SSEDescription", {})
            if table["TableStatus"] == "ACTIVE" and sse.get("Status") == "ENABLED" \
                    and sse.get("KMSMasterKeyArn") == key_b:
                pending.discard(name)
    results[account] = (len(names) - failed, failed)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--accounts", type=int, default=100)
    parser.add_argument("--to-alias", default="alias/b", help="the key every table moves to")
    args = parser.parse_args()
    ok_before, throttled_before = counters(args.endpoint)
    results = {}
    started = time.monotonic()
    threads = [threading.Thread(target=migrate_account, args=(args.endpoint, f"{i:012d}", args.to_alias, results))
               for i in range(1, args.accounts + 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - started
    ok_after, throttled_after = counters(args.endpoint)
    migrated = sum(r[0] for r in results.values())
    failed = sum(r[1] for r in results.values())
    print(f"boto3 migration: {migrated} tables migrated, {failed} failed, in {len(results)} accounts in {wall:.2f} s; "
          f"UpdateTable ok {ok_after - ok_before}, throttled {throttled_after - throttled_before}")


if __name__ == "__main__":
    main()
