package credprovider

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sts"
)

// Identity is who a set of credentials acts as, as STS GetCallerIdentity
// reports it.
type Identity struct {
	Account string
	// ARN is e.g. arn:aws:sts::123456789012:assumed-role/telemetry/tether-gw-0001
	// for an assumed role.
	ARN    string
	UserID string
}

// CallerIdentity asks STS who cfg's credentials belong to, signing
// GetCallerIdentity with them. For a configuration of an assumed role that
// is the assumed role's session, never the source's identity (which is what
// boto3-refresh-session reports). optFns adjust the STS client, e.g. its
// BaseEndpoint.
func CallerIdentity(ctx context.Context, cfg aws.Config, optFns ...func(*sts.Options)) (Identity, error) {
	out, err := sts.NewFromConfig(cfg, optFns...).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		return Identity{}, fmt.Errorf("credprovider: GetCallerIdentity: %w", err)
	}
	return Identity{Account: aws.ToString(out.Account), ARN: aws.ToString(out.Arn), UserID: aws.ToString(out.UserId)}, nil
}
