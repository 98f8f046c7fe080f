package credprovider_test

import (
	"context"
	"log"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/tetherd/tether/credprovider"
	"github.com/tetherd/tether/hsm"
)

// The library example of README.md: device credentials from the AWS IoT
// Core credentials provider, refreshed in the background, in an aws.Config.
func Example() {
	ctx := context.Background()
	id, err := hsm.Open(ctx, "/etc/tether/device.crt", "/etc/tether/device.key")
	if err != nil {
		log.Fatal(err)
	}
	defer id.Close()
	iot, err := credprovider.NewIoT(credprovider.IoTOptions{
		Endpoint:    "c1abc.credentials.iot.eu-west-1.amazonaws.com",
		RoleAlias:   "gateway-role",
		ThingName:   "gw-0001",
		Certificate: id.Certificate(),
	})
	if err != nil {
		log.Fatal(err)
	}
	// Refreshed in the background, before expiry; shared by every client.
	creds, err := credprovider.NewRefresher(iot, credprovider.RefreshOptions{})
	if err != nil {
		log.Fatal(err)
	}
	go creds.Run(ctx)

	cfg, err := config.LoadDefaultConfig(ctx,
		config.WithRegion("eu-west-1"),
		config.WithCredentialsProvider(creds))
	if err != nil {
		log.Fatal(err)
	}
	out, err := sts.NewFromConfig(cfg).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		log.Fatal(err)
	}
	log.Println(*out.Arn)
}
