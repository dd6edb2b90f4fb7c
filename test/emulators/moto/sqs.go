package moto

import (
	"context"
	"fmt"
	"strconv"

	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
)

// QueueDepth is the number of messages in a queue, visible or in flight:
// zero once every message has been deleted.
func QueueDepth(ctx context.Context, c *sqs.Client, url string) (int, error) {
	out, err := c.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: &url,
		AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameApproximateNumberOfMessages, sqstypes.QueueAttributeNameApproximateNumberOfMessagesNotVisible}})
	if err != nil {
		return 0, fmt.Errorf("reading the depth of %s: %w", url, err)
	}
	n := 0
	for name, v := range out.Attributes {
		x, err := strconv.Atoi(v)
		if err != nil {
			return 0, fmt.Errorf("queue attribute %s = %q: %w", name, v, err)
		}
		n += x
	}
	return n, nil
}
