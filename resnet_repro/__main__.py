from resnet_repro.cli import main

raise SystemExit(main())
