"""SNS Publish as boto3 calls it (tablecrypt's notifications publish with the hub's credentials): a message to a
topic of the caller's own account is kept for the admin API; another account's topic, a topic of another region
than the request's, and a subject with a line break are refused with AWS's error codes."""

import json
import urllib.request

import botocore.exceptions
import pytest

from test_boto3_read import hub_client, error_code

TOPIC = "arn:aws:sns:us-east-1:000000000000:tablecrypt-requests"


def published(endpoint):
    with urllib.request.urlopen(f"{endpoint}/_emulator/sns/messages", timeout=5) as resp:
        return json.loads(resp.read())["messages"]


def test_publish_to_an_own_topic_is_kept_and_others_are_refused(endpoint):
    sns = hub_client(endpoint, "sns")
    before = len(published(endpoint))
    answer = sns.publish(
        TopicArn=TOPIC,
        Subject="tablecrypt: change request 1 succeeded",
        Message='{"event": "succeeded"}',
        MessageAttributes={"event": {"DataType": "String", "StringValue": "succeeded"}},
    )
    assert answer["MessageId"]
    messages = published(endpoint)[before:]
    assert [(m["topic_arn"], m["subject"], m["message"], m["message_id"]) for m in messages] == [
        (TOPIC, "tablecrypt: change request 1 succeeded", '{"event": "succeeded"}', answer["MessageId"])
    ]

    with pytest.raises(botocore.exceptions.ClientError) as refused:
        sns.publish(TopicArn="arn:aws:sns:us-east-1:111111111111:theirs", Message="x")
    assert error_code(refused) == "AuthorizationError"
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        sns.publish(TopicArn="arn:aws:sns:eu-west-1:000000000000:elsewhere", Message="x")
    assert error_code(refused) == "InvalidParameter"
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        sns.publish(TopicArn=TOPIC, Subject="two\nlines", Message="x")
    assert error_code(refused) == "InvalidParameter"
    assert len(published(endpoint)) == before + 1
