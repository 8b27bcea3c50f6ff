package kumajudge

import (
	_ "github.com/kumahq/kuma/pkg/core/resources/apis/mesh"
	_ "github.com/kumahq/kuma/pkg/util/proto"
)
