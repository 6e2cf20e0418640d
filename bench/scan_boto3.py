"""The same inventory scan as bench/src/bin/inventory_scan.rs, written the way a platform engineer would with
boto3: a thread per account, AssumeRole, ListTables, DescribeTable each table. Run against the same emulator
(with the same fleet loaded) in the same benchmark run.

    .venv/bin/python bench/scan_boto3.py --endpoint http://127.0.0.1:4599 --accounts 100
"""

import argparse
import threading
import time

import boto3


def scan_account(endpoint, account, results):
    sts = boto3.client("sts", endpoint_url=endpoint, region_name="us-east-1",
                       aws_access_key_id="AKIAHUBTEST000000000", aws_secret_access_key="hub-secret")
    creds = sts.assume_role(RoleArn=f"arn:aws:iam::{account}:role/member", RoleSessionName="scan")["Credentials"]
    ddb = boto3.client("dynamodb", endpoint_url=endpoint, region_name="eu-west-1",
                       aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"],
                       aws_session_token=creds["SessionToken"])
    seen = 0
    for page in ddb.get_paginator("list_tables").paginate():
        for name in page["TableNames"]:
            table = ddb.describe_table(TableName=name)["Table"]
            _ = table.get("SSEDescription", {}).get("KMSMasterKeyArn")
            seen += 1
    results[account] = seen


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--accounts", type=int, default=100)
    args = parser.parse_args()
    results = {}
    started = time.monotonic()
    threads = [threading.Thread(target=scan_account, args=(args.endpoint, f"{i:012d}", results))
               for i in range(1, args.accounts + 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - started
    print(f"boto3 scan: {sum(results.values())} tables in {len(results)} accounts in {wall:.2f} s")


if __name__ == "__main__":
    main()
