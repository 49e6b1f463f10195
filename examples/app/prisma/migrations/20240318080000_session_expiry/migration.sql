-- AlterTable
ALTER TABLE "OperatorSession" ADD COLUMN "expiresAt" DATETIME;
