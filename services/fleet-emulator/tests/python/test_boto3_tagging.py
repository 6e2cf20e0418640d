"""The Resource Groups Tagging API, as tag-reading peer tools (c7n-org, scripts on tag:GetResources) call it with
boto3: listing tables by tag across pages, tagging and untagging them."""

from test_boto3_read import assumed_session

ACCOUNT = "111111111111"
ARN = "arn:aws:dynamodb:eu-west-1:111111111111:table/{}"


def all_resources(tagging, **kwargs):
    pages = tagging.get_paginator("get_resources").paginate(**kwargs)
    return [r for page in pages for r in page["ResourceTagMappingList"]]


def test_tables_are_listed_filtered_tagged_and_untagged_by_the_tagging_api(endpoint):
    tagging = assumed_session(endpoint, ACCOUNT, external_id="ext-111")("resourcegroupstaggingapi")
    dynamodb = assumed_session(endpoint, ACCOUNT, external_id="ext-111")("dynamodb")
    names = dynamodb.list_tables(ExclusiveStartTableName="gen-", Limit=3)["TableNames"]
    assert all(name.startswith("gen-") for name in names), names
    search = [ARN.format(name) for name in names]

    tagged = tagging.tag_resources(ResourceARNList=search, Tags={"team": "search", "env": "prod"})
    assert tagged["FailedResourcesMap"] == {}

    # Every tagged table, one per page: each once, with its tags; untagged tables are not listed (as AWS).
    listed = all_resources(tagging, ResourcesPerPage=1)
    arns = [r["ResourceARN"] for r in listed]
    assert len(arns) == len(set(arns))
    assert set(search) <= set(arns)
    assert ARN.format("customer-table") in arns
    assert all(r["Tags"] for r in listed)
    by_arn = {r["ResourceARN"]: {t["Key"]: t["Value"] for t in r["Tags"]} for r in listed}
    assert by_arn[ARN.format("customer-table")]["team"] == "payments"

    # Filters: tag filters ANDed, a filter's values ORed; resource types other than DynamoDB find nothing.
    found = all_resources(tagging, TagFilters=[{"Key": "team", "Values": ["search"]}, {"Key": "env"}])
    assert sorted(r["ResourceARN"] for r in found) == sorted(search)
    found = all_resources(tagging, TagFilters=[{"Key": "team", "Values": ["search", "payments"]}])
    assert {r["ResourceARN"] for r in found} == set(search) | {ARN.format("customer-table")}
    assert all_resources(tagging, ResourceTypeFilters=["ec2:instance"]) == []
    assert len(all_resources(tagging, ResourceTypeFilters=["dynamodb:table"])) == len(arns)

    # Untag: the table leaves the team's list; an unknown table is reported, not an error.
    missing = ARN.format("no-such-table")
    untagged = tagging.untag_resources(ResourceARNList=[search[0], missing], TagKeys=["team"])
    assert list(untagged["FailedResourcesMap"]) == [missing]
    found = all_resources(tagging, TagFilters=[{"Key": "team", "Values": ["search"]}])
    assert sorted(r["ResourceARN"] for r in found) == sorted(search[1:])
    tagging.untag_resources(ResourceARNList=search, TagKeys=["team", "env"])
    assert all_resources(tagging, TagFilters=[{"Key": "env"}]) == []
