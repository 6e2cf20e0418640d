"""The read half of the emulator's SDK scenario, with boto3 (botocore's own parsers) as the client."""

import json

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

HUB_KEY = "AKIAHUBBOTO300000000"
HUB_SECRET = "hub-secret"
ROLE = "arn:aws:iam::{}:role/tablecrypt-member"
FAST_RETRIES = Config(retries={"max_attempts": 3, "mode": "standard"})


def hub_client(endpoint, service, region="us-east-1"):
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=HUB_KEY,
        aws_secret_access_key=HUB_SECRET,
        config=FAST_RETRIES,
    )


def assumed_session(endpoint, account, external_id=None, region="eu-west-1"):
    kwargs = {"RoleArn": ROLE.format(account), "RoleSessionName": "boto3-test"}
    if external_id:
        kwargs["ExternalId"] = external_id
    creds = hub_client(endpoint, "sts").assume_role(**kwargs)["Credentials"]
    session = boto3.session.Session(
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
        region_name=region,
    )
    return lambda service: session.client(service, endpoint_url=endpoint, config=FAST_RETRIES)


def error_code(excinfo):
    return excinfo.value.response["Error"]["Code"]


def test_assume_role_and_caller_identity(endpoint):
    assert hub_client(endpoint, "sts").get_caller_identity()["Account"] == "000000000000"
    with pytest.raises(ClientError) as excinfo:
        assumed_session(endpoint, "111111111111", external_id="wrong")
    assert error_code(excinfo) == "AccessDenied"
    client = assumed_session(endpoint, "111111111111", external_id="ext-111")
    identity = client("sts").get_caller_identity()
    assert identity["Account"] == "111111111111"
    assert identity["Arn"].endswith(":assumed-role/tablecrypt-member/boto3-test")


def test_kms_keys_and_aliases(endpoint):
    client = assumed_session(endpoint, "111111111111", external_id="ext-111")
    kms = client("kms")
    key = kms.describe_key(KeyId="alias/a")["KeyMetadata"]
    assert key["KeySpec"] == "SYMMETRIC_DEFAULT"
    assert key["KeyManager"] == "CUSTOMER"
    assert key["KeyState"] == "Enabled"
    by_alias_arn = kms.describe_key(KeyId="arn:aws:kms:eu-west-1:111111111111:alias/a")["KeyMetadata"]
    assert by_alias_arn["Arn"] == key["Arn"]
    aliases = {a["AliasName"]: a["TargetKeyId"] for a in kms.list_aliases()["Aliases"]}
    assert aliases["alias/a"] == key["KeyId"]
    assert "alias/aws/dynamodb" in aliases  # the managed key exists once a table uses it
    key_ids = {k["KeyId"] for k in kms.get_paginator("list_keys").paginate(Limit=1).build_full_result()["Keys"]}
    assert key["KeyId"] in key_ids and len(key_ids) == 3
    with pytest.raises(ClientError) as excinfo:
        kms.describe_key(KeyId="alias/missing")
    assert error_code(excinfo) == "NotFoundException"


def test_list_and_describe_tables(endpoint):
    client = assumed_session(endpoint, "111111111111", external_id="ext-111")
    ddb, kms = client("dynamodb"), client("kms")
    names = []
    for page in ddb.get_paginator("list_tables").paginate(PaginationConfig={"PageSize": 7}):
        names.extend(page["TableNames"])
    assert len(names) == 29 and names == sorted(names)

    owned = ddb.describe_table(TableName="owned-table")["Table"]
    assert owned["TableStatus"] == "ACTIVE" and "SSEDescription" not in owned

    managed_key = kms.describe_key(KeyId="alias/aws/dynamodb")["KeyMetadata"]
    assert managed_key["KeyManager"] == "AWS"
    managed = ddb.describe_table(TableName="managed-table")["Table"]["SSEDescription"]
    assert managed == {"Status": "ENABLED", "SSEType": "KMS", "KMSMasterKeyArn": managed_key["Arn"]}

    key_a = kms.describe_key(KeyId="alias/a")["KeyMetadata"]["Arn"]
    customer = ddb.describe_table(TableName="customer-table")["Table"]
    assert customer["SSEDescription"]["KMSMasterKeyArn"] == key_a
    tags = ddb.list_tags_of_resource(ResourceArn=customer["TableArn"])["Tags"]
    assert tags == [{"Key": "team", "Value": "payments"}]

    us = assumed_session(endpoint, "111111111111", external_id="ext-111", region="us-east-1")
    us_key = us("kms").describe_key(KeyId="alias/a")["KeyMetadata"]["Arn"]
    global_table = ddb.describe_table(TableName="global-table")["Table"]
    assert global_table["GlobalTableVersion"] == "2019.11.21"
    assert global_table["Replicas"] == [
        {"RegionName": "us-east-1", "ReplicaStatus": "ACTIVE", "KMSMasterKeyId": us_key}
    ]


def test_accounts_are_isolated(endpoint):
    other = assumed_session(endpoint, "222222222222")
    assert other("dynamodb").list_tables()["TableNames"] == ["other-account-table"]
    with pytest.raises(ClientError) as excinfo:
        other("dynamodb").describe_table(TableName="customer-table")
    assert error_code(excinfo) == "ResourceNotFoundException"


def test_injected_throttling_is_retried_and_reported(endpoint, admin):
    rule = {"type": "throttle", "rate": 1.0, "operation": "DescribeTable", "account_id": "111111111111"}
    admin("POST", "/faults", json.dumps(rule).encode())
    admin("DELETE", "/requests")
    client = assumed_session(endpoint, "111111111111", external_id="ext-111")
    with pytest.raises(ClientError) as excinfo:
        client("dynamodb").describe_table(TableName="owned-table")
    assert error_code(excinfo) == "ThrottlingException"
    _, body = admin("GET", "/requests?operation=DescribeTable")
    outcomes = [r["outcome"] for r in json.loads(body)["requests"]]
    # botocore retried (several attempts reached the emulator), and every one was throttled.
    assert len(outcomes) >= 2 and set(outcomes) == {"ThrottlingException"}, outcomes
